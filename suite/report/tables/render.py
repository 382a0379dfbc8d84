"""A report table and its three renderings: Markdown, LaTeX (booktabs; a bare ``tabular`` ready for
``\\input``) and CSV (the tidy numbers, not the display strings)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Table:
    name: str  # file stem
    caption: str  # one line: README caption and a LaTeX comment
    text: pd.DataFrame  # display strings; the index holds the row labels
    bold: pd.DataFrame  # same shape: True marks a best (or tied-with-best) cell
    data: pd.DataFrame  # tidy numbers for the CSV


def plain_table(name: str, caption: str, text: pd.DataFrame, data: pd.DataFrame) -> Table:
    """A table that marks nothing."""
    return Table(name, caption, text, pd.DataFrame(False, index=text.index, columns=text.columns), data)


def fmt(x: float, kind: str = "num") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if kind == "accuracy":
        return f"{x:.3f}"
    if kind == "count":
        return f"{x:,.0f}" if float(x).is_integer() or abs(x) >= 100 else f"{x:,.1f}"
    return f"{x:.3g}"


def interval(mean: float, lo: float, hi: float, kind: str = "num") -> str:
    """``mean [lo, hi]``, or the mean alone where there is no interval."""
    if math.isnan(lo) or lo == hi:
        return fmt(mean, kind)
    return f"{fmt(mean, kind)} [{fmt(lo, kind)}, {fmt(hi, kind)}]"


def markdown(t: Table) -> str:
    def cell(s: str, b: bool) -> str:
        s = str(s).replace("|", "\\|")
        return f"**{s}**" if b else s

    head = [t.text.index.name or "", *map(str, t.text.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":---"] + ["---:"] * len(t.text.columns)) + "|"]
    for (label, row), (_, brow) in zip(t.text.iterrows(), t.bold.iterrows()):
        lines.append("| " + " | ".join([str(label)] + [cell(v, b) for v, b in zip(row, brow)]) + " |")
    return "\n".join(lines) + "\n"


LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
         "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "×": r"$\times$", "≥": r"$\geq$", "≤": r"$\leq$",
         "τ": r"$\tau$", "—": "---", "–": "--", "≈": r"$\approx$", "†": r"$^\dagger$", "‡": r"$^\ddagger$",
         "§": r"$^\S$", "◦": r"$^\circ$",
         "α": r"$\alpha$", "η": r"$\eta$", "√": r"$\surd$", "·": r"$\cdot$", "−": "-", "κ": r"$\kappa$",
         "ρ": r"$\rho$", "μ": r"$\mu$", "λ": r"$\lambda$", "Σ": r"$\Sigma$", "²": r"$^2$", "∝": r"$\propto$"}


def tex_escape(s: str) -> str:
    return "".join(LATEX.get(ch, ch) for ch in s)


def latex(t: Table) -> str:
    def cell(s: str, b: bool) -> str:
        return rf"\textbf{{{tex_escape(str(s))}}}" if b else tex_escape(str(s))

    head = [t.text.index.name or "", *map(str, t.text.columns)]
    lines = [f"% {tex_escape(t.caption)}", "% needs \\usepackage{booktabs}",
             r"\begin{tabular}{l" + "r" * len(t.text.columns) + "}", r"\toprule",
             " & ".join(tex_escape(h) for h in head) + r" \\", r"\midrule"]
    for (label, row), (_, brow) in zip(t.text.iterrows(), t.bold.iterrows()):
        lines.append(" & ".join([tex_escape(str(label))] + [cell(v, b) for v, b in zip(row, brow)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write(t: Table, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {ext: folder / f"{t.name}.{ext}" for ext in ("md", "tex", "csv")}
    paths["md"].write_text(markdown(t))
    paths["tex"].write_text(latex(t))
    t.data.to_csv(paths["csv"], index=False)
    return paths

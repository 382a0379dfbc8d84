"""Training: the one loop (``loop``) and the two engines it drives, one model (``single``) or a stack
of K configurations of one cell (``stacked``, on ``stack_models`` and ``stack_optim``, and
``parity``, the check a user's optimizer passes before it is stacked); batches,
schedule, evaluation, device and clock; the stored rows of a finished run (``rows``).
May import ``suite.tasks``, ``suite.optim``, ``suite.store`` and ``suite.types``.
"""
from suite.train.single import make_step, train
from suite.train.stacked import train_many, train_stacked

__all__ = ["make_step", "train", "train_many", "train_stacked"]

"""An optimizer package of a user's own, outside the suite: the worked example of the README's
"Bring your own optimizer" (its YAML is ``examples/conf/optimizer/myopt.yaml``)."""
from myopt.signum import Signum

__all__ = ["Signum"]

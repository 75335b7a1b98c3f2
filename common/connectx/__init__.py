"""ConnectX (Kaggle's connect-four), the two-player wing: game rules on bitboards, Kaggle's
negamax, observation planes, a one-agent Gymnasium environment with the opponent inside
``step``, opponents, the league and Elo, evaluation, the Kaggle export, the learner's and the
actor's hooks, its wire messages and its settings."""

ENV_ID = "connectx"  # the --env name

# the wing's message kinds and episode fields are known to the wire layer once the wing is in use
from common.connectx import messages as _messages  # noqa: E402,F401

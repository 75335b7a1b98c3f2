"""ConnectX (Kaggle's connect-four): game rules on bitboards, Kaggle's negamax, observation planes,
a one-agent Gymnasium environment with the opponent inside ``step``, and the numpy policy of the
exported Kaggle agent."""

ENV_ID = "connectx"  # the --env name

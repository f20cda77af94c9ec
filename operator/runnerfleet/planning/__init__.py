"""Pure planners: desired state vs observed state -> a list of actions; status folds.

Layer: planning (imports models and conventions). No I/O.
"""

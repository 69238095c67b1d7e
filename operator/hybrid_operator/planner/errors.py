"""The planner's error type: bad input (unknown profile, malformed config), message names the value."""


class PlannerError(ValueError):
    """Input the planner cannot use; the message says what was wrong, with the value, and what to do.

    Callers at the edges turn it into their own error (the CLI's UserError, an operator condition).
    """

"""The generic engine: config rules, weight rules, the walker, plans, coverage and the runtime.

Nothing in this package knows a model family; families are declared in `weightport.families`.
"""

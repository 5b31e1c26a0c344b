"""monitor: the operation phase. Drift of logged predictions against the training reference
(`drift`: the log window from `window`, the Evidently tests in `compare`, Prometheus metrics from
`export`) and the retrain trigger (`trigger`, `webhook`, `retrain_mr`). Importing the package does nothing.
"""

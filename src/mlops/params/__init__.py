"""params: one typed class per params.yaml section, one module per section (`mlops.params.<section>`).

A DVC stage imports and validates only the sections it reads (`mlops.params.base.load_sections`), so
editing another section's class never invalidates its run-cache; `mlops.config.Params` composes every
section into the whole file for the other commands. Importing this package does nothing (the server's
`mlops.params.serve` is msgspec and must not pull in pydantic).
"""

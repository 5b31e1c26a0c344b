"""gitops: GitOps operations on deploy/envs/. Promote a registered model version to an environment by changing one file
in git (`record`, `promote`, `rollback`), render the environment's chart (`render`) and rehearse what the
cluster would run under Docker (`rehearse`). Importing this package does nothing.
"""

"""The pipeline's stages: plain functions over a Workspace, called alike by the CLI, the HTTP API and tests."""

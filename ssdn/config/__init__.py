"""The run config: its typed schema, composition and validation (Hydra's YAML lives in ``ssdn/conf``)."""

"""reconciler: a Terraform-style declarative reconciler for AWS HealthImaging image-set metadata."""

__version__ = "0.1.0"

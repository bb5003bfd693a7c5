"""MLflow runs and a run's figure."""

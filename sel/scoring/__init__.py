"""The scorer model: difficulty sorting and gamma calibration."""

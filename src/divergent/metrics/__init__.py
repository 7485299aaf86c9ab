"""Pure functions on arrays: reference arithmetic, calibration, pair metrics, bootstrap."""

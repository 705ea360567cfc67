"""One thin Prefect task per pipeline stage; the logic lives in src/steertown."""

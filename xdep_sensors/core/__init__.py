"""The engine, free of Airflow: what a wait looks for, probes and decisions, feeds and shared reads,
the poller, cursors. Everything Airflow-specific is resolved above it and handed down as plain values."""

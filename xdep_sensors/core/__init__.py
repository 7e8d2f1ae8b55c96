"""The engine, free of Airflow: Airflow-specific values are resolved above it and handed down plain."""

"""The Airflow plugin: the Remote dependencies page (``plugin``), its app (``page``) and data
(``dependencies``)."""

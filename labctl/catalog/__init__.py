"""The experiment catalog: data entries, their fields, the query language, provenance."""

"""The experiment catalog: data entries, their fields, the query language, provenance."""

from typing import Any

Entry = dict[str, Any]
"""An experiment entry as stored and shown: free-form by design (the schema's fields, labctl's
own, and any number of the lab's free ones), so the one untyped document that travels between
the catalog, the `Lab`, the REST API and the CLI."""

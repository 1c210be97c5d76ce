"""How large an input may be, and what else labctl refuses by default. Every entry, field name
and value is checked against these before anything is stored, and the web server refuses larger
request bodies before reading them; the README's "Limits" section lists them, with the one that
is a setting: `database.query_seconds`, after which MongoDB stops a query."""

DOCUMENT_BYTES = 1_000_000  # one experiment entry, as stored (BSON); MongoDB's own cap is 16 MiB
REQUEST_BYTES = 2_000_000  # one request body to the web server (REST or dashboard form)
NAME_PARTS = 10  # dotted parts of a field name: runclass.id has 2
NAME_PART_CHARS = 128  # characters of each part of a field name, and of each key in a value
DEPTH = 20  # nesting of mappings and lists in an entry, dotted parts included
WATCHDOG_IDS = 10_000  # job ids one watchdog operation names (a run's claimed jobs, a batch)
FIELDS = 1_000  # keys in one entry, counted at every depth
CONFIG_DEPTH = 50  # nesting of mappings and lists in a config file; PyYAML recurses once a level
PASSWORD_SCORE = 3  # zxcvbn's score a password needs (0-4): 3 is about 10^8 guesses
# Networks a webhook may reach although they are not public (loopback, private, link-local, ...):
# none. It is code, not a setting, so that no member's config can open them; tests allow loopback.
WEBHOOK_NETWORKS: tuple[str, ...] = ()

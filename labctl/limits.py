"""How large an input may be, and what else labctl refuses by default. Every entry, field name
and value is checked against these before anything is stored, and the web server refuses larger
request bodies before reading them; the README's "Limits" section lists them, with those that are
settings: `database.query_seconds`, after which MongoDB stops a query, and `web.member_calls` /
`web.member_wait_seconds`, whose defaults are MEMBER_CALLS and MEMBER_WAIT_SECONDS below."""

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

# The web service: each request's share of the store and of the server (issue 23).
QUERY_TERMS = 100  # fields, sort keys, `where` conditions or filter keys one query names (each)
PAGE_ENTRIES = 1_000  # entries (or jobs) one answer lists
ANSWER_BYTES = 8_000_000  # one page of experiments or jobs, as stored (BSON): refused, not built
MEMBER_CALLS = 1  # store calls one member (or credential) has queued or running at once
MEMBER_WAIT_SECONDS = 5.0  # how long a further call waits for its turn before a 429
KEEP_ALIVE_SECONDS = 5  # an idle kept-alive connection is closed after this
REQUEST_READ_SECONDS = 10.0  # a request's head and body arrive within this, or it is closed

"""ssamba-bench's harness, measurements, reports and command line (docs/architecture.md maps the tree)."""

from bench import legacy

legacy.install()  # saved runs and queued cluster jobs name modules of the old flat layout

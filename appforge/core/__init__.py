"""The kernel: what every other package stands on, importing nothing of ours.

- ``settings``: the one ``APPFORGE_*`` settings class.
- ``db``: the database engine, the declarative base, migrations (``migrations/``).
- ``errors``: the one error root (``AppforgeError``) every package's errors derive from.
- ``queue``: the one lease queue (claim rows with a lease, worker threads).
- ``sandbox``: the one Jinja2 sandbox every template is compiled in.
- ``signing``: the request-signing scheme shared by the server and the client.
- ``scorer_types``: the scorer types of evaluations, shared by ``evals`` and the client.
"""

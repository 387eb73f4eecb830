"""remedy: the only code that changes a server, and capacity planning.

- `kill`: chooses clients (protection from analysis/classify.py) and runs CLIENT KILL ID;
- `sockets`: aborts one client host's TCP connections with `ss -K`, on the server's own host, when it is full;
- `limits`: the checks before, and the CONFIG GET/SET of, maxclients and timeout;
- `plan`: the runbook's capacity arithmetic (pure).

The commands in connguard.commands parse options, call these, and print; every change is a dry run there
until --yes."""

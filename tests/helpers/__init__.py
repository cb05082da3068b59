"""The test harness, one way each (issue 21):

- `tests.helpers.nodes`: one node in the test's own reactor (`start_node`, the `node` fixture), two
  nodes of one cluster in process (`two_nodes`, the `spread` and `make_cluster` fixtures), and
  `known`: a registration seen by a node;
- `tests.helpers.cluster`: the cluster timings every test uses (HEARTBEAT, NODE_TIMEOUT), a member's
  config, and N real `courtyard start` processes on one redis-server (`node_process`, the
  `node_processes` fixture) with their admin CLI;
- `tests.helpers.poll`: `until`, the one way to wait for a condition, bounded in time;
- `tests.helpers.peer`: the raw WAMP peer (`joined`, `rpc_joined`, `registered`, `quiet`, over
  tests/wampclient.py's RawPeer) for tests that need to see the exact messages;
- `tests.helpers.slowpeer`: a peer that stops reading, over both transports, and floods to send it;
- `tests.helpers.admin`, `tests.helpers.realms`, `tests.helpers.tables`, `tests.helpers.configs`,
  `tests.helpers.clients`, `tests.helpers.metrics`: what several test modules share (an admin principal
  and the CLI, an authenticating realm, session records, bad configs, leaving clients, a /metrics
  scrape), so that no test module imports another (tests/test_harness.py checks it).

Below these: tests/routerproc.py (a `courtyard start` process), tests/redisproc.py (a redis-server of the
test's own), tests/wampclient.py (autobahn clients and raw peers), tests/wamppeer.py (the property
tests' peer over both transports), tests/pki.py (certificates), tests/procs.py (session process classes).
Fixtures are in tests/conftest.py, built from these."""

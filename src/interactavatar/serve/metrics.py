"""The endpoint's own Prometheus metrics, served on /metrics beside kserve's.

What an operator needs to see the guard and the generation slots at work (refusals by reason,
clients that went away, generations waiting, running and how they ended), and what the tests
read to know that a cancelled generation really stopped rather than ran to its end.
"""

from prometheus_client import Counter, Gauge

REFUSED = Counter("interactavatar_requests_refused", "Requests the guard refused before the model saw them",
                  ["reason"])
ABANDONED = Counter("interactavatar_requests_abandoned", "Requests whose client went away before the response")
WAITING = Gauge("interactavatar_generations_waiting", "Parsed requests waiting for a generation slot")
RUNNING = Gauge("interactavatar_generations_running", "Generations running in the worker threads")
GENERATIONS = Counter("interactavatar_generations", "Generations that ended, by outcome "
                      "(completed, cancelled: the client went away, failed)", ["outcome"])

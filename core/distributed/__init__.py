"""The distributed job service: GPU workers behind Celery + Redis, the record in PostgreSQL.

    front-end (web UI, bot, CLI) -- CeleryJobService (service.py) -- Redis -- statuary worker (worker.py)

- broker.py   the Celery app, the Redis connection, key names, timing constants, the model
              a worker announces to the front-ends
- quota.py    the waiting line in Redis: limits checked and reserved atomically (Lua), owners
              taking turns, positions, cancel of a waiting job
- events.py   job events as JSON over Redis pub/sub, and their decoding back into core.jobs events
- service.py  CeleryJobService: the front-ends' JobService
- worker.py   `statuary worker`: the Celery task that claims a row and runs it on the model
- sweep.py    what brings a dead worker's job back, and ends jobs that never reached the queue

Nothing here is imported unless STATUARY_BROKER_URL is set.
"""

"""gunicorn settings for the `web` service.

Run as `gunicorn -c platform/gunicorn.conf.py config.wsgi:application`; every number can be changed
from the environment without rebuilding the image.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")

# A fixed default rather than one from the CPU count: inside a container that count is the host's.
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
# Threads keep a worker answering autosaves while another request waits on the database.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))

# nginx buffers a whole upload before passing it on, so this covers hashing and storing a 500 MB clip,
# not the client's upload time.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5

# Restart workers now and then to cap slow memory growth; the jitter keeps them from restarting together.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "1000"))
max_requests_jitter = 100

# Worker heartbeats on tmpfs: on a container's overlay filesystem a slow write can get a healthy
# worker killed as unresponsive.
worker_tmp_dir = "/dev/shm"

accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("AFFECTLOOP_LOG_LEVEL", "info").lower()
access_log_format = '%({x-forwarded-for}i)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'

# Whose X-Forwarded-* headers gunicorn trusts: loopback unless told. docker-compose.yml sets the subnet
# of the network that only nginx and web share; "*" would let any container on a shared network claim
# https.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# No gunicornc control socket (gunicorn 25.1+): nothing here uses it, and the container's root is
# read-only. Older versions ignore the unknown name.
control_socket_disable = True

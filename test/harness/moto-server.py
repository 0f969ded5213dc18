# Starts moto's server on 127.0.0.1 with a port the OS picks, and prints it for the harness
# (test/harness/moto.ts), as kinesalite-server.cjs does for kinesalite.
import signal
import sys
import threading

from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"eddy-harness listening on port {port}", flush=True)

stopped = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stopped.set())
signal.signal(signal.SIGINT, lambda *_: stopped.set())
stopped.wait()
server.stop()
sys.exit(0)

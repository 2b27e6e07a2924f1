"""A TLS front for the tests: accepts TLS on 127.0.0.1 with the certificate and key given,
and relays each connection's bytes to a plain TCP port on 127.0.0.1, as a reverse proxy
in front of a self-hosted S3 server does. Prints the port it listens on, then serves until
killed.

Usage: tls_front.py CERT KEY UPSTREAM_PORT

Each connection is one thread that relays both ways with select (an SSL socket is never
read and written from two threads). A client that does not trust the certificate ends
its handshake: that connection is closed and the next one served.
"""

import select
import socket
import ssl
import sys
import threading

cert, key, upstream = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)

listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], flush=True)


def relay(raw):
    try:
        raw.settimeout(10)
        conn = ctx.wrap_socket(raw, server_side=True)
        conn.settimeout(None)
    except (ssl.SSLError, OSError):
        raw.close()
        return
    try:
        up = socket.create_connection(("127.0.0.1", upstream))
    except OSError:
        conn.close()
        return
    try:
        while True:
            ready = [conn] if conn.pending() else []
            if not ready:
                ready, _, _ = select.select([conn, up], [], [])
            if conn in ready:
                data = conn.recv(65536)
                if not data:
                    break
                up.sendall(data)
            if up in ready:
                data = up.recv(65536)
                if not data:
                    break
                conn.sendall(data)
    except (ssl.SSLError, OSError):
        pass
    finally:
        up.close()
        conn.close()


while True:
    client, _ = listener.accept()
    threading.Thread(target=relay, args=(client,), daemon=True).start()

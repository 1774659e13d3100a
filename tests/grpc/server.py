"""A real gRPC server (grpcio) for the gateway's end-to-end tests.

Serves `test.Echo` with raw-bytes methods of each call kind, and the
standard health service (grpc.health.v1). Prints `port N` once
listening on 127.0.0.1. Usage: server.py [--not-serving]
"""

import sys
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def unary(request, context):
    context.set_trailing_metadata((("x-trailer", "unary"),))
    return b"echo:" + request


def server_stream(request, context):
    for i in range(3):
        yield request + b":" + str(i).encode()
    context.set_trailing_metadata((("x-trailer", "server-stream"),))


def client_stream(requests, context):
    return b"+".join(requests)


def bidi(requests, context):
    for message in requests:
        yield message.upper()


def fail(request, context):
    context.set_trailing_metadata((("x-reason", "asked"),))
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def slow(request, context):
    time.sleep(float(request.decode() or "2"))
    return b"late"


def headers(request, context):
    seen = dict(context.invocation_metadata())
    return ",".join(f"{k}={v}" for k, v in sorted(seen.items()) if k.startswith("x-")).encode()


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    methods = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Headers": grpc.unary_unary_rpc_method_handler(headers),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", methods),))
    checker = health.HealthServicer()
    status = health_pb2.HealthCheckResponse.NOT_SERVING if "--not-serving" in sys.argv else health_pb2.HealthCheckResponse.SERVING
    checker.set("", status)
    checker.set("test.Echo", status)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"port {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

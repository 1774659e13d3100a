"""A real gRPC client (grpcio) for the gateway's end-to-end tests.

client.py TARGET METHOD [MESSAGE...] [--timeout S] [--meta K=V]...

Calls /test.Echo/METHOD on TARGET (host:port, plain HTTP/2) with the
messages as raw bytes (unary and server-streaming calls send the first),
and prints one JSON object: the status code's name, its details, the
answers, and the initial and trailing metadata.
"""

import json
import sys

import grpc

KINDS = {
    "Unary": "unary_unary",
    "Fail": "unary_unary",
    "Slow": "unary_unary",
    "Headers": "unary_unary",
    "ServerStream": "unary_stream",
    "ClientStream": "stream_unary",
    "Bidi": "stream_stream",
}


def main():
    args = sys.argv[1:]
    timeout = None
    metadata = []
    rest = []
    i = 0
    while i < len(args):
        if args[i] == "--timeout":
            timeout = float(args[i + 1])
            i += 2
        elif args[i] == "--meta":
            k, v = args[i + 1].split("=", 1)
            metadata.append((k, v))
            i += 2
        else:
            rest.append(args[i])
            i += 1
    target, method, messages = rest[0], rest[1], [m.encode() for m in rest[2:]]
    kind = KINDS[method]
    result = {"code": "OK", "details": "", "answers": [], "initial": {}, "trailing": {}}
    with grpc.insecure_channel(target) as channel:
        call = getattr(channel, kind)(f"/test.Echo/{method}")
        try:
            if kind == "unary_unary":
                answer, info = call.with_call(messages[0], timeout=timeout, metadata=metadata)
                result["answers"] = [answer.decode()]
            elif kind == "stream_unary":
                answer, info = call.with_call(iter(messages), timeout=timeout, metadata=metadata)
                result["answers"] = [answer.decode()]
            else:
                request = messages[0] if kind == "unary_stream" else iter(messages)
                info = call(request, timeout=timeout, metadata=metadata)
                result["answers"] = [a.decode() for a in info]
            result["initial"] = dict(info.initial_metadata() or ())
            result["trailing"] = dict(info.trailing_metadata() or ())
        except grpc.RpcError as error:
            result["code"] = error.code().name
            result["details"] = error.details() or ""
            result["initial"] = dict(error.initial_metadata() or ())
            result["trailing"] = dict(error.trailing_metadata() or ())
    print(json.dumps(result))


if __name__ == "__main__":
    main()

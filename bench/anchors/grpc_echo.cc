// The gRPC echo service of bench/procedures.py in C++ (--grpc-server cpp): gRPC C++'s async
// API on one completion queue drained by one thread, serving bench.v1.Echo/Echo(Pad) returns
// (Pad) (bench/anchors/echo.proto) with server reflection, answering the request it got. It
// stands in for the compiled (Go, C++, Rust) services a gateway's users run: its CPU per call
// is a small fraction of grpc-js's (bench/README.md). Built on first use by
// bench/anchors/build_grpc_echo.sh into bench/.anchors/grpc-cpp/ (Debian: libgrpc++-dev,
// protobuf-compiler-grpc, libprotobuf-dev).
//
//   bench/.anchors/grpc-cpp/grpc_echo PORT
//
// Prints "echo-grpc: listening on 127.0.0.1:PORT" when ready; runs until SIGTERM/SIGINT.
// Bounds: kPosted calls are asked for at once (each answered call asks for one more), so at
// most kPosted CallData objects live; calls beyond them wait inside gRPC's own queue.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <unistd.h>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>

#include "echo.grpc.pb.h"

namespace {

constexpr int kPosted = 128;

class CallData {
 public:
  CallData(bench::v1::Echo::AsyncService* service, grpc::ServerCompletionQueue* cq)
      : service_(service), cq_(cq), responder_(&ctx_) {
    service_->RequestEcho(&ctx_, &request_, &responder_, cq_, cq_, this);
  }

  // One completion-queue event for this call: a request arrived, or its answer was sent.
  void Proceed(bool ok) {
    if (!answered_ && ok) {
      new CallData(service_, cq_);  // keep kPosted calls asked for
      answered_ = true;
      responder_.Finish(request_, grpc::Status::OK, this);
      return;
    }
    delete this;  // answered (or the queue is shutting down)
  }

 private:
  bench::v1::Echo::AsyncService* service_;
  grpc::ServerCompletionQueue* cq_;
  grpc::ServerContext ctx_;
  bench::v1::Pad request_;
  grpc::ServerAsyncResponseWriter<bench::v1::Pad> responder_;
  bool answered_ = false;
};

void Stop(int) { _exit(0); }

}  // namespace

int main(int argc, char** argv) {
  const std::string port = argc > 1 ? argv[1] : "50051";
  const std::string address = "127.0.0.1:" + port;
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  bench::v1::Echo::AsyncService service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::ServerCompletionQueue> cq = builder.AddCompletionQueue();
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    std::fprintf(stderr, "echo-grpc: cannot listen on %s\n", address.c_str());
    return 1;
  }
  std::signal(SIGTERM, Stop);
  std::signal(SIGINT, Stop);
  for (int i = 0; i < kPosted; ++i) new CallData(&service, cq.get());
  std::printf("echo-grpc: listening on %s\n", address.c_str());
  std::fflush(stdout);
  void* tag = nullptr;
  bool ok = false;
  while (cq->Next(&tag, &ok)) static_cast<CallData*>(tag)->Proceed(ok);
  return 0;
}

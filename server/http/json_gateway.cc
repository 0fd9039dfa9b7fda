#include "server/http/json_gateway.h"

#include <climits>
#include <cstdint>
#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"
#include "kaizen/v1/dataset_service.pb.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "kaizen/v1/inference_service.pb.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/common/status_macros.h"

namespace kaizen::http {
namespace {

std::unique_ptr<google::protobuf::Message> NewMessage(const google::protobuf::Descriptor* type) {
  const google::protobuf::Message* prototype =
      google::protobuf::MessageFactory::generated_factory()->GetPrototype(type);
  return std::unique_ptr<google::protobuf::Message>(prototype ? prototype->New() : nullptr);
}

// A oneof "payload" with `chunk` bytes and a `sha256` string: the shape of
// the uploads' requests and the download's answers.
bool IsByteStream(const google::protobuf::Descriptor* type) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::OneofDescriptor* payload = type->FindOneofByName("payload");
  const FieldDescriptor* chunk = type->FindFieldByName("chunk");
  const FieldDescriptor* sha256 = type->FindFieldByName("sha256");
  return payload != nullptr && chunk != nullptr && sha256 != nullptr &&
         chunk->containing_oneof() == payload && sha256->containing_oneof() == payload &&
         chunk->type() == FieldDescriptor::TYPE_BYTES &&
         sha256->type() == FieldDescriptor::TYPE_STRING;
}

bool IsUpload(const google::protobuf::Descriptor* type) {
  const google::protobuf::FieldDescriptor* header = type->FindFieldByName("header");
  return IsByteStream(type) && header != nullptr &&
         header->containing_oneof() == type->FindOneofByName("payload") &&
         header->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE;
}

std::string SerializeOrEmpty(const google::protobuf::Message& message) {
  std::string bytes;
  message.SerializeToString(&bytes);
  return bytes;
}

}  // namespace

JsonGateway::JsonGateway(const std::vector<std::string>& services) {
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const std::string& name : services) {
    const google::protobuf::ServiceDescriptor* service = pool->FindServiceByName(name);
    if (service == nullptr) continue;
    for (int i = 0; i < service->method_count(); ++i) {
      const google::protobuf::MethodDescriptor* m = service->method(i);
      Method method;
      if (m->client_streaming()) {
        if (m->server_streaming() || !IsUpload(m->input_type())) continue;
        method.kind = Method::Kind::kUpload;
      } else if (m->server_streaming()) {
        method.kind =
            IsByteStream(m->output_type()) ? Method::Kind::kDownload : Method::Kind::kEvents;
      }
      method.full_name = absl::StrCat("/", service->full_name(), "/", m->name());
      method.request = m->input_type();
      method.response = m->output_type();
      routes_.emplace(absl::StrCat(kPrefix, method.full_name), std::move(method));
    }
  }
}

std::vector<std::string> JsonGateway::V1Services() {
  // Named by the generated code, which also links each file's descriptors
  // into the pool (a binary that uses no message of a file would lack them).
  std::vector<std::string> services;
  for (const google::protobuf::FileDescriptor* file :
       {v1::GetDatasetRequest::descriptor()->file(), v1::GetModelRequest::descriptor()->file(),
        v1::GetJobRequest::descriptor()->file(), v1::PredictRequest::descriptor()->file()}) {
    for (int i = 0; i < file->service_count(); ++i) {
      services.push_back(file->service(i)->full_name());
    }
  }
  return services;
}

const JsonGateway::Method* JsonGateway::Find(absl::string_view path) const {
  path = path.substr(0, path.find('?'));
  auto it = routes_.find(path);
  return it == routes_.end() ? nullptr : &it->second;
}

std::vector<std::string> JsonGateway::Routes() const {
  std::vector<std::string> routes;
  for (const auto& [route, method] : routes_) routes.push_back(route);
  return routes;
}

absl::StatusOr<std::string> JsonGateway::RequestBytes(const Method& method, absl::string_view json,
                                                      absl::string_view last_event_id) {
  std::unique_ptr<google::protobuf::Message> request = NewMessage(method.request);
  if (request == nullptr) {
    return absl::InternalError(absl::StrCat("no generated type for ", method.request->full_name()));
  }
  if (json.find_first_not_of(" \t\r\n") != absl::string_view::npos) {
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    const auto status = google::protobuf::util::JsonStringToMessage(
        google::protobuf::StringPiece(json.data(), json.size()), request.get(), options);
    if (!status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the body is not a ", method.request->full_name(),
                       " in proto3 JSON: ", status.message().ToString()));
    }
  }
  if (!last_event_id.empty()) {
    const google::protobuf::FieldDescriptor* after =
        method.request->FindFieldByName("after_sequence");
    int64_t sequence = 0;
    if (after == nullptr || after->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_INT64 ||
        after->is_repeated()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Last-Event-ID is only for a stream that resumes after a sequence; ",
                       method.request->full_name(), " has no after_sequence"));
    }
    if (last_event_id.size() > 19 ||
        last_event_id.find_first_not_of("0123456789") != absl::string_view::npos ||
        !absl::SimpleAtoi(last_event_id, &sequence)) {
      return absl::InvalidArgumentError(absl::StrCat("Last-Event-ID \"",
                                                     absl::CHexEscape(last_event_id.substr(0, 32)),
                                                     "\" is not a sequence number"));
    }
    request->GetReflection()->SetInt64(request.get(), after, sequence);
  }
  std::string bytes;
  if (!request->SerializeToString(&bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ", method.request->full_name(), " cannot be serialised"));
  }
  return bytes;
}

namespace {

absl::StatusOr<std::unique_ptr<google::protobuf::Message>> ParseResponse(
    const JsonGateway::Method& method, absl::string_view bytes) {
  std::unique_ptr<google::protobuf::Message> response = NewMessage(method.response);
  if (response == nullptr || bytes.size() > static_cast<size_t>(INT_MAX) ||
      !response->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InternalError(absl::StrCat("the answer of ", method.full_name, " is not a ",
                                            method.response->full_name()));
  }
  return response;
}

absl::StatusOr<std::string> PrintJson(const JsonGateway::Method& method,
                                      const google::protobuf::Message& response) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(response, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("the answer of ", method.full_name,
                     " cannot be printed as JSON: ", status.message().ToString()));
  }
  return json;
}

}  // namespace

absl::StatusOr<std::string> JsonGateway::ResponseJson(const Method& method,
                                                      absl::string_view bytes) {
  ASSIGN_OR_RETURN(std::unique_ptr<google::protobuf::Message> response,
                   ParseResponse(method, bytes));
  return PrintJson(method, *response);
}

absl::StatusOr<std::string> JsonGateway::EventFrame(const Method& method, absl::string_view bytes) {
  ASSIGN_OR_RETURN(std::unique_ptr<google::protobuf::Message> message,
                   ParseResponse(method, bytes));
  ASSIGN_OR_RETURN(std::string json, PrintJson(method, *message));
  const google::protobuf::Reflection* reflection = message->GetReflection();
  std::string frame;
  const google::protobuf::FieldDescriptor* sequence = method.response->FindFieldByName("sequence");
  if (sequence != nullptr && !sequence->is_repeated() &&
      sequence->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_INT64 &&
      reflection->GetInt64(*message, sequence) != 0) {
    absl::StrAppend(&frame, "id: ", reflection->GetInt64(*message, sequence), "\n");
  }
  std::string event = "message";
  if (const google::protobuf::OneofDescriptor* oneof = method.response->FindOneofByName("event")) {
    if (const google::protobuf::FieldDescriptor* set =
            reflection->GetOneofFieldDescriptor(*message, oneof)) {
      event = set->name();
    }
  }
  // The printer writes no line breaks (strings escape theirs): one data line.
  absl::StrAppend(&frame, "event: ", event, "\ndata: ", json, "\n\n");
  return frame;
}

absl::StatusOr<std::string> JsonGateway::UploadHeaderBytes(const Method& method,
                                                           absl::string_view json) {
  std::unique_ptr<google::protobuf::Message> request = NewMessage(method.request);
  const google::protobuf::FieldDescriptor* field = method.request->FindFieldByName("header");
  if (request == nullptr || field == nullptr) {
    return absl::InternalError(absl::StrCat(method.full_name, " is not an upload"));
  }
  google::protobuf::Message* header =
      request->GetReflection()->MutableMessage(request.get(), field);
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), header, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ", kUploadHeader, " header is not a ", field->message_type()->full_name(),
                     " in proto3 JSON: ", status.message().ToString()));
  }
  return SerializeOrEmpty(*request);
}

std::string JsonGateway::UploadChunkBytes(const Method& method, absl::string_view bytes) {
  std::unique_ptr<google::protobuf::Message> request = NewMessage(method.request);
  request->GetReflection()->SetString(request.get(), method.request->FindFieldByName("chunk"),
                                      std::string(bytes));
  return SerializeOrEmpty(*request);
}

std::string JsonGateway::UploadTrailerBytes(const Method& method, absl::string_view hex) {
  std::unique_ptr<google::protobuf::Message> request = NewMessage(method.request);
  request->GetReflection()->SetString(request.get(), method.request->FindFieldByName("sha256"),
                                      std::string(hex));
  return SerializeOrEmpty(*request);
}

absl::StatusOr<JsonGateway::DownloadPiece> JsonGateway::ParseDownloadPiece(
    const Method& method, absl::string_view bytes) {
  ASSIGN_OR_RETURN(std::unique_ptr<google::protobuf::Message> message,
                   ParseResponse(method, bytes));
  const google::protobuf::Reflection* reflection = message->GetReflection();
  DownloadPiece piece;
  const google::protobuf::FieldDescriptor* set =
      reflection->GetOneofFieldDescriptor(*message, method.response->FindOneofByName("payload"));
  if (set != nullptr && set->name() == "chunk") piece.chunk = reflection->GetString(*message, set);
  if (set != nullptr && set->name() == "sha256") {
    piece.sha256 = reflection->GetString(*message, set);
  }
  return piece;
}

}  // namespace kaizen::http

// The JSON gateway of the HTTP API (server/http/json_gateway): a request body
// from any browser or script becomes a v1 request's wire bytes, and a
// service's answer becomes proto3 JSON. Input: a selector byte, then the
// bytes. The selector's upper bits pick one of the routes (every unary v1
// method); its low bit the direction.
// Even: the bytes are a request body, their first line a Last-Event-ID
// header when the selector's second bit is set. When the gateway accepts
// them, the wire bytes must parse as the method's request type.
// Odd: the bytes are an answer's wire bytes. When the gateway prints them,
// the JSON must parse back (unknown fields refused) into the answer type and
// print again to the same JSON: what the console reads is what was sent. As
// a Server-Sent Event (any route's answer type), it must be one frame: an
// optional id line, an event line, one data line, a blank line.
// Uploads: an even input is also a Kaizen-Upload-Header, whose message must
// parse with the header set. Downloads: an odd input is also a piece of the
// file, parsed exactly when the answer prints.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_util.h"
#include "google/protobuf/message.h"
#include "server/http/json_gateway.h"

namespace {

using kaizen::http::JsonGateway;

const JsonGateway& Gateway() {
  static const JsonGateway* gateway = new JsonGateway(JsonGateway::V1Services());
  return *gateway;
}

const std::vector<std::string>& Routes() {
  static const std::vector<std::string>* routes = new std::vector<std::string>(Gateway().Routes());
  return *routes;
}

std::unique_ptr<google::protobuf::Message> New(const google::protobuf::Descriptor* type) {
  return std::unique_ptr<google::protobuf::Message>(
      google::protobuf::MessageFactory::generated_factory()->GetPrototype(type)->New());
}

// protobuf's JSON parser reads the printer's "-0" (a double's negative
// zero) as 0: the one value whose sign does not survive the round trip.
std::string WithoutNegativeZeros(std::string json) {
  for (size_t at = 0; (at = json.find("-0", at)) != std::string::npos;) {
    const bool value_start =
        at > 0 && (json[at - 1] == ':' || json[at - 1] == '[' || json[at - 1] == ',');
    const bool value_end =
        at + 2 < json.size() && (json[at + 2] == ',' || json[at + 2] == ']' || json[at + 2] == '}');
    if (value_start && value_end) {
      json.erase(at, 1);
    } else {
      at += 2;
    }
  }
  return json;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  kaizen::fuzz::Check(!Routes().empty());
  const JsonGateway::Method* method = Gateway().Find(Routes()[(data[0] >> 1) % Routes().size()]);
  kaizen::fuzz::Check(method != nullptr);
  absl::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] % 2 == 0) {
    absl::string_view last_event_id;
    if (data[0] & 2) {
      const size_t line = std::min(bytes.find('\n'), bytes.size());
      last_event_id = bytes.substr(0, line);
      bytes.remove_prefix(std::min(line + 1, bytes.size()));
    }
    auto wire = JsonGateway::RequestBytes(*method, bytes, last_event_id);
    if (!wire.ok()) {
      kaizen::fuzz::Check(wire.status().code() == absl::StatusCode::kInvalidArgument);
      return 0;
    }
    auto request = New(method->request);
    kaizen::fuzz::Check(request->ParseFromString(*wire));
    if (method->kind == JsonGateway::Method::Kind::kUpload) {
      auto header = JsonGateway::UploadHeaderBytes(*method, bytes);
      if (!header.ok()) {
        kaizen::fuzz::Check(header.status().code() == absl::StatusCode::kInvalidArgument);
        return 0;
      }
      kaizen::fuzz::Check(request->ParseFromString(*header));
      const google::protobuf::FieldDescriptor* field = method->request->FindFieldByName("header");
      kaizen::fuzz::Check(request->GetReflection()->HasField(*request, field));
    }
    return 0;
  }
  auto json = JsonGateway::ResponseJson(*method, bytes);
  auto frame = JsonGateway::EventFrame(*method, bytes);
  kaizen::fuzz::Check(json.ok() == frame.ok());
  if (method->kind == JsonGateway::Method::Kind::kDownload) {
    auto piece = JsonGateway::ParseDownloadPiece(*method, bytes);
    // The same parse as the answer's (which may still fail to print, e.g.
    // a string that is not UTF-8).
    kaizen::fuzz::Check(!json.ok() || piece.ok());
    kaizen::fuzz::Check(!piece.ok() || piece->chunk.empty() || piece->sha256.empty());
  }
  if (!json.ok()) return 0;
  const size_t lines = std::count(frame->begin(), frame->end(), '\n');
  kaizen::fuzz::Check(lines == 3 || lines == 4);
  kaizen::fuzz::Check(absl::EndsWith(*frame, absl::StrCat("\ndata: ", *json, "\n\n")));
  // The printed JSON is a valid request body of the same shape: reuse the
  // request parser on a method whose request is the answer's type.
  JsonGateway::Method echo = *method;
  echo.request = method->response;
  auto reparsed = JsonGateway::RequestBytes(echo, *json);
  kaizen::fuzz::Check(reparsed.ok());
  auto again = JsonGateway::ResponseJson(*method, *reparsed);
  kaizen::fuzz::Check(again.ok() && WithoutNegativeZeros(*again) == WithoutNegativeZeros(*json));
  return 0;
}

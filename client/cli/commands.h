// The kaizenctl commands ("datasets upload", "models list", ...): each turns
// its arguments into calls on a KaizenClient and prints the answer as a table
// or as JSON. Flags are parsed in main and arrive here as plain options.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/lib/kaizen_client.h"
#include "google/protobuf/message.h"

namespace kaizen::cli {

enum class OutputFormat { kTable, kJson };

struct CommandOptions {
  OutputFormat output = OutputFormat::kTable;
  // Draw progress bars (on stderr) for uploads and downloads.
  bool show_progress = false;
  // datasets upload: "auto", "folder" or "idx", and the IDX labels file.
  std::string dataset_format = "auto";
  std::string labels;
  // Both uploads.
  std::vector<std::string> class_names;
  std::string description;
  // models upload: "3,224,224", "0.485,0.456,0.406", same for std, and the
  // head's dotted module path.
  std::string input_shape;
  std::string mean;
  std::string std;
  std::string head;
  // models list.
  bool all_versions = false;
};

class Commands {
 public:
  // `client` and `out` must outlive this object.
  Commands(client::KaizenClient* client, CommandOptions options,
           std::ostream* out);

  // Runs the command named by the first two arguments ("datasets", "list")
  // with the rest. Unknown commands and wrong argument counts are usage
  // errors (see usage.h).
  absl::Status Run(const std::vector<std::string>& args);

  // The full help text: synopsis, every command, global flags.
  static std::string Usage();

 private:
  using Args = std::vector<std::string>;

  absl::Status DatasetsUpload(const Args& args);
  absl::Status DatasetsList(const Args& args);
  absl::Status DatasetsGet(const Args& args);
  absl::Status DatasetsDelete(const Args& args);
  absl::Status ModelsUpload(const Args& args);
  absl::Status ModelsList(const Args& args);
  absl::Status ModelsGet(const Args& args);
  absl::Status ModelsDelete(const Args& args);
  absl::Status ModelsDownload(const Args& args);

  // Prints `message` as JSON, or `text` for --output=table.
  absl::Status Print(const google::protobuf::Message& message,
                     const std::string& text);

  struct Spec {
    const char* group;
    const char* verb;
    const char* args;
    int min_args;
    int max_args;
    const char* flags;
    const char* help;
    absl::Status (Commands::*run)(const Args&);
  };
  static const std::vector<Spec>& Specs();

  client::KaizenClient* client_;
  CommandOptions options_;
  std::ostream* out_;
};

}  // namespace kaizen::cli

// kaizenctl: the command-line client of the Kaizen fine-tuning service.
//
//   kaizenctl [--server=HOST:PORT] [--output=table|json] COMMAND ARGS...
//
// Exit status: 0 on success, 1 when a call fails, 2 on a usage error.

#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/cli/commands.h"
#include "client/cli/progress_bar.h"
#include "client/cli/usage.h"
#include "client/lib/kaizen_client.h"

// Global.
ABSL_FLAG(std::string, server, kaizen::cli::DefaultServer(),
          "host:port of the server; $KAIZEN_SERVER sets the default");
ABSL_FLAG(std::string, output, "table",
          "table (for people) or json (one document, proto3 JSON mapping)");
ABSL_FLAG(absl::Duration, timeout, absl::InfiniteDuration(),
          "deadline of each call, e.g. 30s or 10m; inf for none");
// datasets upload.
ABSL_FLAG(std::string, format, "auto", "datasets upload: auto, folder or idx");
ABSL_FLAG(std::string, labels, "",
          "datasets upload (IDX): the labels file; default: found beside the "
          "images file");
// Both uploads.
ABSL_FLAG(std::vector<std::string>, class_names, {},
          "class names a,b,c (or @FILE, one a line)");
ABSL_FLAG(std::string, description, "", "free-text description");
// models upload / list.
ABSL_FLAG(std::string, input_shape, "", "models upload: C,H,W e.g. 3,224,224");
ABSL_FLAG(std::string, mean, "", "models upload: per-channel mean, a,b,c");
ABSL_FLAG(std::string, std, "", "models upload: per-channel std, a,b,c");
ABSL_FLAG(std::string, head, "",
          "models upload: dotted path of the classification head, e.g. fc");
ABSL_FLAG(bool, all_versions, false, "models list: one row per version");

namespace {

int Fail(const absl::Status& status) {
  if (kaizen::cli::IsUsageError(status)) {
    std::cerr << "kaizenctl: " << status.message()
              << "\nRun 'kaizenctl --help' for usage.\n";
    return 2;
  }
  std::cerr << "kaizenctl: " << absl::StatusCodeToString(status.code()) << ": "
            << status.message() << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using kaizen::cli::Commands;
  absl::SetProgramUsageMessage(Commands::Usage());
  if (kaizen::cli::WantsHelp(argc, argv)) {
    std::cout << Commands::Usage();
    return 0;
  }
  if (absl::Status flags = kaizen::cli::CheckFlags(argc, argv); !flags.ok()) {
    return Fail(flags);
  }
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  const std::vector<std::string> args(positional.begin() + 1, positional.end());
  if (args.empty()) {
    std::cout << Commands::Usage();
    return 2;
  }

  kaizen::cli::CommandOptions options;
  const std::string output = absl::GetFlag(FLAGS_output);
  if (output == "json") {
    options.output = kaizen::cli::OutputFormat::kJson;
  } else if (output != "table") {
    return Fail(kaizen::cli::UsageError(
        "--output must be table or json, not \"" + output + "\""));
  }
  options.show_progress = kaizen::cli::ProgressBar::StderrIsTerminal();
  options.dataset_format = absl::GetFlag(FLAGS_format);
  options.labels = absl::GetFlag(FLAGS_labels);
  options.class_names = absl::GetFlag(FLAGS_class_names);
  options.description = absl::GetFlag(FLAGS_description);
  options.input_shape = absl::GetFlag(FLAGS_input_shape);
  options.mean = absl::GetFlag(FLAGS_mean);
  options.std = absl::GetFlag(FLAGS_std);
  options.head = absl::GetFlag(FLAGS_head);
  options.all_versions = absl::GetFlag(FLAGS_all_versions);

  kaizen::client::KaizenClient::Options client_options;
  client_options.timeout = absl::GetFlag(FLAGS_timeout);
  std::unique_ptr<kaizen::client::KaizenClient> client =
      kaizen::client::KaizenClient::Connect(absl::GetFlag(FLAGS_server),
                                            client_options);
  Commands commands(client.get(), std::move(options), &std::cout);
  const absl::Status status = commands.Run(args);
  return status.ok() ? 0 : Fail(status);
}

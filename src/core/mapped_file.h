// A read-only memory map of a whole file. Model files are mapped, not read, so loading a 16 GB
// model does not double its memory and a truncated file is detected by size checks, not by faults.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace lserve {

class MappedFile {
 public:
  // Maps `path`; throws Error naming the path when it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole (small) file into a string; throws Error naming the path.
std::string read_text_file(const std::string& path);

bool file_exists(const std::string& path);

}  // namespace lserve

#pragma once
// Spare nodes of a node-based standard container (std::map, std::unordered_map, ...), kept when
// an entry is extracted and reused for the next insert: the agent's table of calls in flight and
// their deadlines then allocate nothing per call once warm. At most `Max` nodes are kept; the
// owner's lock guards it, as it guards the container.
#include <cstddef>
#include <utility>
#include <vector>

namespace remora::detail {

template <class Container, std::size_t Max = 4096>
class NodeCache {
 public:
  using Node = typename Container::node_type;

  void keep(Node&& node) {
    if (node && spare_.size() < Max) spare_.push_back(std::move(node));
  }
  // A spare node (empty if none): set its key and value, then insert it.
  Node take() {
    if (spare_.empty()) return {};
    Node node = std::move(spare_.back());
    spare_.pop_back();
    return node;
  }

 private:
  std::vector<Node> spare_;
};

}  // namespace remora::detail

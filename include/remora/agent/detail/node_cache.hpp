#pragma once
// Spare nodes of a node-based standard container (std::map, std::unordered_map, ...), kept when
// an entry is extracted and reused for the next insert: the agent's table of calls in flight and
// their deadlines then allocate nothing per call once warm. At most `Max` nodes are kept; the
// owner's lock guards it, as it guards the container.
#include <cstddef>
#include <type_traits>
#include <utility>
#include <vector>

namespace remora::detail {

template <class Container, std::size_t Max = 4096>
class NodeCache {
 public:
  using Node = typename Container::node_type;
  using Iterator = typename Container::iterator;

  void keep(Node&& node) {
    if (node && spare_.size() < Max) spare_.push_back(std::move(node));
  }

  // Inserts (key, value) into `c`, in a spare node when there is one; where it went.
  template <class K, class V>
  Iterator emplace(Container& c, K&& key, V&& value) {
    if (spare_.empty()) return position(c.emplace(std::forward<K>(key), std::forward<V>(value)));
    Node node = std::move(spare_.back());
    spare_.pop_back();
    node.key() = std::forward<K>(key);
    node.mapped() = std::forward<V>(value);
    return position(c.insert(std::move(node)));
  }

 private:
  // What emplace and insert return differs between multi- and unique-key containers.
  template <class R>
  static Iterator position(R&& r) {
    if constexpr (std::is_same_v<std::decay_t<R>, Iterator>)
      return r;
    else if constexpr (requires { r.position; })
      return r.position;
    else
      return r.first;
  }

  std::vector<Node> spare_;
};

}  // namespace remora::detail

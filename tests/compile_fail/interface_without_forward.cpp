// expect: RemoteModule<I> needs an interface I
#include <remora/remora.hpp>
struct NoForward {
  virtual ~NoForward() = default;
  virtual void reset() = 0;
};
remora::RemoteModule<NoForward> m;

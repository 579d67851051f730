#pragma once
// What remora's own tests set on an agent (Options::test_hooks): declared apart from the fault
// plan itself (fault_plan.hpp), so that a program's translation units do not parse it.
#include <memory>

namespace remora::detail {

class FaultPlan;

struct TestHooks {
  std::shared_ptr<FaultPlan> faults;  // frames this worker sends that the plan names fail
};

}  // namespace remora::detail

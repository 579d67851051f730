// expect: an argument cannot be converted to the function's parameter type
#include <remora/remora.hpp>
torch::Tensor make_table(std::int64_t rows, std::int64_t cols);
void f() { remora::remote<&make_table>("ps", std::string("ten"), 64); }

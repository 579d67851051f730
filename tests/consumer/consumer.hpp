#pragma once
// A user's project of three translation units (main.cpp, model.cpp, ops.cpp), each including
// remora's public headers: built twice, header-only (remora::remora) and against
// remora::compiled, both from the installed package.
#include <cstdint>
#include <string>

#include <torch/torch.h>

// The contract between the trainer and the worker "ps".
struct Scorer {
  virtual ~Scorer() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};

// model.cpp: the module behind Scorer, and what makes one on "ps".
struct Affine;
int train_on(const std::string& device);  // one distributed-autograd step; 0 when it learned

// ops.cpp: functions called by type and an operator called by name.
int twice(int x);
torch::Tensor scale(torch::Tensor x, double s);
int calls_on(const std::string& worker);  // 0 when every call gave what it should

#pragma once
// Meshes: DeviceMesh, placements, process groups over a mesh, groups of remote modules and of
// any remote object (RemoteGroup, spawn) with their adverbs.
// Not part of <remora/remora.hpp>: process groups need Gloo's headers (Debian: libgloo-dev),
// which libtorch's own headers do not bring.
#include "remora/module/device_mesh.hpp"
#include "remora/module/placement.hpp"
#include "remora/module/process_group.hpp"
#include "remora/module/remote_group.hpp"
#include "remora/module/remote_module_group.hpp"

"""Conan 2 recipe for remora: the headers and remora::compiled (remora's non-template code built
once, as a static library), installed by remora's own CMake install, so consumers load the real
remoraConfig.cmake (find_package(remora); remora::remora header-only, remora::compiled).

    conan create . -pr debian          # asio and cereal from the profile ([platform_requires])

libtorch is not a requirement: no registry carries a usable one, and libtorch users find it with
find_package(Torch) (remora's config does too). scripts/check-packages builds and runs a consumer.
"""
from conan import ConanFile
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy


class RemoraConan(ConanFile):
    name = "remora"
    version = "0.1.0"
    license = "MIT"
    description = "Typed remote calls for libtorch programs (C++20, header-only or compiled)"
    topics = ("rpc", "libtorch", "distributed", "header-only")
    package_type = "static-library"
    settings = "os", "arch", "compiler", "build_type"
    exports_sources = "CMakeLists.txt", "LICENSE", "cmake/*", "include/*", "src/*", "tools/*"
    no_copy_source = True

    def requirements(self):
        self.requires("asio/1.22.1")
        self.requires("cereal/1.3.2")

    def layout(self):
        cmake_layout(self)

    def generate(self):
        CMakeToolchain(self).generate()
        CMakeDeps(self).generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure(variables={"REMORA_BUILD_TESTS": "OFF", "REMORA_BUILD_EXAMPLES": "OFF",
                                   "REMORA_BUILD_WORKER": "OFF"})
        cmake.build()

    def package(self):
        CMake(self).install()
        copy(self, "LICENSE", self.source_folder, f"{self.package_folder}/licenses")

    def package_info(self):
        # Consumers use remora's own package files, not ones Conan would generate.
        self.cpp_info.set_property("cmake_find_mode", "none")
        self.cpp_info.builddirs = ["lib/cmake/remora"]
        self.cpp_info.bindirs = []

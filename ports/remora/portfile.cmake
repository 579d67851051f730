# An overlay port built from this checkout (vcpkg install remora --overlay-ports=<repo>/ports).
# The package is the headers, remora::compiled (a static library) and remora's own CMake package
# files; libtorch is found by the consumer with find_package(Torch), as libtorch users do.
set(VCPKG_BUILD_TYPE release)  # one build of the library: libtorch's Debian build is one too
set(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../..")
vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS -DREMORA_BUILD_TESTS=OFF -DREMORA_BUILD_EXAMPLES=OFF -DREMORA_BUILD_WORKER=OFF)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH lib/cmake/remora)
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/debug")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")

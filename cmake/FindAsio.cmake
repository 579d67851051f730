# Finds standalone Asio (Debian: libasio-dev) and provides Asio::Asio.
# Set Asio_ROOT to a folder holding include/asio.hpp to use a copy elsewhere.
find_path(Asio_INCLUDE_DIR asio.hpp PATH_SUFFIXES include)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Asio REQUIRED_VARS Asio_INCLUDE_DIR)
if(Asio_FOUND AND NOT TARGET Asio::Asio)
  add_library(Asio::Asio INTERFACE IMPORTED)
  set_target_properties(Asio::Asio PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${Asio_INCLUDE_DIR}"
    INTERFACE_COMPILE_DEFINITIONS "ASIO_STANDALONE")
endif()

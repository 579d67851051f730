# Installs the build tree remora's tests were built in into a scratch prefix (cmake --install), then
# configures, builds and runs tests/consumer against it: a program of three translation units,
# header-only and with remora::compiled, as two processes. (scripts/check-packages builds the
# package from source with tests and examples off, as docs/packaging.md says.)
file(REMOVE_RECURSE "${WORK}")
set(prefix "${WORK}/prefix")
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed: ${ARGV}\n${out}\n${err}")
  endif()
endfunction()
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
cmake_host_system_information(RESULT cores QUERY NUMBER_OF_LOGICAL_CORES)
run(${CMAKE_COMMAND} -S ${CONSUMER} -B ${WORK}/consumer -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_BUILD_TYPE=)  # -O0: every inline function used is emitted, the strictest link
run(${CMAKE_COMMAND} --build ${WORK}/consumer --parallel ${cores})
run(${WORK}/consumer/consumer)
run(${WORK}/consumer/consumer_compiled)
message(STATUS "consumer (header-only and remora::compiled) built against the installed remora and ran")

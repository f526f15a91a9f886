from tether.runtime.server import main

main()

from tether.runtime.boot import main

main()

// libstdc++ streams, one mode per argv[1]. LOGFILE is the tap file.
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>

int main(int argc, char **argv) {
    if (argc < 2) return 64;
    const char *mode = argv[1];
    const char *log = std::getenv("LOGFILE");
    if (!std::strcmp(mode, "endl")) {
        for (int i = 0; i < 200; i++) std::cout << "cout endl " << i << " " << 2.5 * i << std::endl;
    } else if (!std::strcmp(mode, "noendl")) {
        // Left in the stream buffer until exit.
        for (int i = 0; i < 500; i++) std::cout << "cout no endl " << i << '\n';
        std::cout << "last without newline";
    } else if (!std::strcmp(mode, "cerr")) {
        for (int i = 0; i < 100; i++) {
            std::cerr << "cerr " << i << std::endl;
            std::cout << "cout " << i << "\n";
            std::clog << "clog " << i << "\n";
        }
    } else if (!std::strcmp(mode, "nosync")) {
        std::ios::sync_with_stdio(false);
        for (int i = 0; i < 3000; i++) {
            std::cout << "unsynced cout " << i << '\n';
            if (i % 100 == 0) std::cerr << "unsynced cerr " << i << '\n';
        }
        std::cout << "flushed" << std::endl;
        for (int i = 0; i < 100; i++) std::cout << "left for exit " << i << '\n';
    } else if (!std::strcmp(mode, "ofstream")) {
        {
            std::ofstream f(log, std::ios::app);
            for (int i = 0; i < 500; i++) f << "ofstream line " << i << '\n';
            f << "with endl" << std::endl;
            f.write("write()\n", 8);
            f.put('p');
            f << std::flush << "\n";
        }
        std::ofstream g(log, std::ios::app);
        g << "second ofstream, closed at exit\n";
        std::cout << "stdout too\n";
    } else {
        return 64;
    }
    return 0;
}

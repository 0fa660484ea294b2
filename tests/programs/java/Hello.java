// Java output: System.out, System.err, a FileWriter on the tap file.
import java.io.FileWriter;
import java.io.IOException;

public class Hello {
    public static void main(String[] args) throws IOException {
        for (int i = 0; i < 200; i++) {
            System.out.println("java out " + i);
            if (i % 4 == 0) System.err.println("java err " + i);
        }
        System.out.print("no newline");
        System.out.flush();
        try (FileWriter w = new FileWriter(System.getenv("LOGFILE"), true)) {
            for (int i = 0; i < 100; i++) w.write("java log " + i + "\n");
        }
    }
}

// Creates ALLOW ACLs with Kafka's Admin API (run by `pdx dev up --secure` as a single-file Java program:
// `java -cp <kafka libs> KafkaAcls.java client.properties acls.txt`). aiokafka 0.14 has no CreateAcls and
// the Kafka tools jar (kafka-acls) is not among the broker's runtime jars, so this stays a few lines of Java.
// acls.txt: one "User:NAME OPERATION RESOURCE_TYPE RESOURCE_NAME PATTERN_TYPE" per line (see secure.py).
import java.io.FileInputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class KafkaAcls {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) {
            props.load(in);
        }
        List<AclBinding> bindings = new ArrayList<>();
        for (String line : Files.readAllLines(Path.of(args[1]))) {
            line = line.strip();
            if (line.isEmpty() || line.startsWith("#")) continue;
            String[] f = line.split("\\s+");
            ResourcePattern resource = new ResourcePattern(
                ResourceType.valueOf(f[2]), f[3], PatternType.valueOf(f[4]));
            AccessControlEntry entry = new AccessControlEntry(
                f[0], "*", AclOperation.valueOf(f[1]), AclPermissionType.ALLOW);
            bindings.add(new AclBinding(resource, entry));
        }
        try (Admin admin = Admin.create(props)) {
            admin.createAcls(bindings).all().get();
        }
        System.out.println("created " + bindings.size() + " ACLs");
    }
}
